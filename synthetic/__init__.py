"""Synthetic paediatric TSC brain MRI studies (DICOM) with ground truth."""

"""DICOM node: receives studies from a PACS, runs the pipeline once per complete study,
sends the results back (see docs/dicom-node.md)."""

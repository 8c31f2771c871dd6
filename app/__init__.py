"""TSC epilepsy-outcome MONAI Deploy application."""

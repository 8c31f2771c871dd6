"""Pipeline stages: each module is a pure core plus a thin MONAI Deploy operator."""

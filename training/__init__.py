"""Training pipeline that produces the model sets the app loads."""

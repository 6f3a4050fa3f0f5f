"""Template tags of the demo pages."""

"""hetrt package."""

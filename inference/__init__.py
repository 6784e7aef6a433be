"""The GLM-4.6V-Flash model server managed by Instance Console."""

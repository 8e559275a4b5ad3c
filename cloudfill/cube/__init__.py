"""The cube: schema and validation, masks, loaders and the scene simulator."""

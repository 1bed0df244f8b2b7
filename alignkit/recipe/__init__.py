"""TOML recipes: typed sections, plugin-contributed options, ``key.path=value`` overrides, and errors
that name the file and the key (``sections`` holds the models, ``load`` the reading)."""

from alignkit.recipe.load import load_recipe, validate_recipe
from alignkit.recipe.sections import (DataSection, DistributedSection, InputPath, ModelSection, ObjectiveSection,
                                      OptimSection, OutputPath, OutputSection, PluginSection, Recipe, ReferenceSection,
                                      SamplerSection, TokenizerSection)

__all__ = ["DataSection", "DistributedSection", "InputPath", "ModelSection", "ObjectiveSection", "OptimSection",
           "OutputPath", "OutputSection", "PluginSection", "Recipe", "ReferenceSection", "SamplerSection",
           "TokenizerSection", "load_recipe", "validate_recipe"]

"""Base class of every config section: unknown keys and wrong types are errors."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Fields are documented with a docstring under each field."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True, frozen=False
    )

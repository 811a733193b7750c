"""What every configuration model shares: the strict base model, a problem at a YAML path, and the error
that carries every problem of one file — named for the kind of file that failed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown keys are refused (a typo is an error, never a silently ignored setting); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigProblem(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class ConfigError(ValueError):
    """Every problem of one configuration file; the message names the file and each YAML path."""

    def __init__(self, source: str, problems: list[ConfigProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun}\n{lines}")


class EnvironmentConfigError(ConfigError):
    """An environment file (config/environments/*.yaml) or the whole set of files it references."""


class CatalogConfigError(ConfigError):
    """The event catalog or its policies (config/catalog.yaml, config/policies.yaml)."""


class ComponentsConfigError(ConfigError):
    """The components and their contracts (config/components.yaml)."""


class PolicyConfigError(ConfigError):
    """The compliance policy (config/compliance.yaml)."""

"""Typed settings and the part registries: how a config section names the class it builds.

A *part* (writer, codec, reader, connector, text objective, layers, denoiser) is a config section with
``kind = "..."`` and only that kind's fields. Each kind is a class that registers itself with its
settings model, in the file that defines it::

    class MARSettings(Settings):
        kind: Literal["mar"] = "mar"
        head_depth: int = Field(3, gt=0)

    @WRITERS.register(MARSettings)
    class MARWriter(Writer): ...

``WRITERS.validate({"kind": "mar", "head_depth": 2}, "writer")`` returns a ``MARSettings``; a field that
the kind does not have is one error line naming the key and the kind. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Settings(Section):
    """The settings of one kind of a part; subclasses fix ``kind`` to a ``Literal``."""

    kind: str


T = TypeVar("T")


class Registry(Generic[T]):
    """The kinds of one part: ``kind -> (class, settings model)``."""

    def __init__(self, part: str, default: str) -> None:
        self.part, self.default = part, default
        self._classes: dict[str, type[T]] = {}
        self._settings: dict[str, type[Settings]] = {}

    def register(self, settings: type[Settings]) -> Callable[[type[T]], type[T]]:
        """Class decorator: register the class under its settings' ``kind``."""
        kind = settings.model_fields["kind"].default
        if not isinstance(kind, str):
            raise TypeError(f"{settings.__name__}.kind needs a default: the kind's name")

        def add(cls: type[T]) -> type[T]:
            if kind in self._classes and self._classes[kind] is not cls:
                raise ValueError(f"{self.part} kind {kind!r} is registered twice")
            self._classes[kind], self._settings[kind] = cls, settings
            cls.settings_model = settings  # type: ignore[attr-defined]
            return cls

        return add

    def kinds(self) -> list[str]:
        _load_builtin_parts()
        return sorted(self._classes)

    def cls(self, kind: str) -> type[T]:
        _load_builtin_parts()
        if kind not in self._classes:
            raise ValueError(f"unknown {self.part} kind {kind!r}; allowed: {', '.join(self.kinds())}")
        return self._classes[kind]

    def build(self, settings: Settings, *args: Any, **kwargs: Any) -> T:
        """An instance of the class registered under ``settings.kind``: ``cls.from_settings(settings, ...)``
        where the class has one (its constructor takes plain arguments), else ``cls(settings, ...)``."""
        cls = self.cls(settings.kind)
        return getattr(cls, "from_settings", cls)(settings, *args, **kwargs)

    def validate(self, value: Any, where: str) -> Settings:
        """A dict (or settings) -> the kind's validated settings; errors name ``where.key`` and the kind.
        Raises ``PydanticCustomError('part', ...)`` so that it reads as one line per problem inside a config."""
        if isinstance(value, Settings):
            value = value.model_dump()
        if value is None:
            value = {}
        if not isinstance(value, dict):
            message = f"'{where}' must be a section (a table with kind = ...), got {value!r}"
            raise PydanticCustomError("part", "{message}", {"message": message})
        kind = value.get("kind", self.default)
        _load_builtin_parts()
        if kind not in self._settings:
            message = f"bad value for '{where}.kind': {kind!r} — allowed: {', '.join(self.kinds())}"
            raise PydanticCustomError("part", "{message}", {"message": message})
        model = self._settings[kind]
        try:
            return model.model_validate({**value, "kind": kind})
        except ValidationError as err:
            message = format_errors(err, model, where, f"{self.part} kind {kind!r}")
            raise PydanticCustomError("part", "{message}", {"message": message}) from None


def format_errors(err: ValidationError, root: type[BaseModel], prefix: str = "", owner: str = "") -> str:
    """One line per problem, each naming the dotted key (``prefix.key``) and, for a part, its kind."""
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        key = ".".join([prefix, *loc] if prefix else loc) or "config"
        if e["type"] == "part":
            lines.append(e["msg"])
        elif e["type"] == "extra_forbidden":
            section = _section_at(e["loc"][:-1], root)
            allowed = ", ".join(section.model_fields) if section else ""
            where = f" for {owner}" if owner and len(loc) == 1 else ""
            lines.append(f"unknown config key '{key}'{where} (allowed here: {allowed})")
        elif e["type"] == "literal_error":
            lines.append(f"bad value for '{key}': {e['input']!r} — allowed: {e['ctx']['expected']}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            named = not prefix or msg.startswith(f"{prefix}.")  # a model-level message that names its keys
            lines.append(f"bad value for '{key}': {msg}" if loc else (msg if named else f"{prefix}: {msg}"))
    return "\n".join(lines)


def _section_at(loc: tuple, root: type[BaseModel]) -> type[BaseModel] | None:
    model: type[BaseModel] = root
    for part in loc:
        field = model.model_fields.get(str(part))
        options = (field.annotation, *get_args(field.annotation)) if field is not None else ()  # X | None too
        found = [t for t in options if isinstance(t, type) and issubclass(t, BaseModel)]
        if not found:
            return None
        model = found[0]
    return model


_loaded = False


def _load_builtin_parts() -> None:
    """Import the modules that define the built-in kinds (they register themselves on import)."""
    global _loaded
    if not _loaded:
        _loaded = True
        import unimm.parts  # noqa: F401


# The parts. Each kind registers itself in the module that defines it (see unimm/parts.py for the list).
WRITERS: Registry = Registry("writer", default="latent")
CODECS: Registry = Registry("codec", default="pixels")
READERS: Registry = Registry("reader", default="shared")
CONNECTORS: Registry = Registry("connector", default="mlp")
TEXT: Registry = Registry("text", default="ar")
LAYERS: Registry = Registry("layers", default="dense")
DENOISERS: Registry = Registry("denoiser", default="flow")
_BY_PART = {r.part: r for r in (WRITERS, CODECS, READERS, CONNECTORS, TEXT, LAYERS, DENOISERS)}


def registry(part: str) -> Registry:
    """The registry of a config section's part (``writer``, ``codec``, ``reader``, ``text``, ``layers``, ...)."""
    return _BY_PART[part]


class Part:
    """What every registered class may add: checks of the config it sits in (beyond its own fields)."""

    settings_model: type[Settings]

    @classmethod
    def check_config(cls, cfg: Any) -> None:
        """Raise ValueError naming the keys when ``cfg``'s other parts do not fit this one."""

"""Option classes for commands whose defaults or choices live in modules that are costly
to import: they are read when needed, not at start-up."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click


class HelpDefault(click.Option):
    """An option whose default, as --help shows it, is `shown(option name)`: called when
    the help is shown, so the module it reads is not imported at start-up."""

    def __init__(self, *args, shown: Callable[[str], str], **kwargs):
        super().__init__(*args, **kwargs)
        self.shown = shown

    def get_help_record(self, ctx):
        self.show_default = self.shown(self.name)
        return super().get_help_record(ctx)


class LazyChoice(click.Choice):
    """A choice among `choices()`, called when the choices are needed (a value is checked,
    --help is shown), so the module that lists them is not imported at start-up."""

    def __init__(self, choices: Callable[[], Sequence[str]], case_sensitive: bool = True):
        # click.Choice.__init__ would read the choices now: it only sets these two
        self._choices = choices
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._choices())

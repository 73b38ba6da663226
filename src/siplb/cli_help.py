"""Help pages that say everything: a group lists each command with its whole summary.

Click cuts a command's summary in a group's list to what fits on the command's line ("announce
Run under ExaBGP (its process API, text encoder): announce..."). Here the list shows the first
paragraph of each command's help whole, wrapped under it; ``siplb COMMAND --help`` has the rest.
"""

from __future__ import annotations

import click


def summary(command: click.Command) -> str:
    """The command's ``short_help``, else the first paragraph of its help, on one line."""
    text = command.short_help or (command.help or "").split("\n\n", 1)[0]
    return " ".join(text.split())


class HelpGroup(click.Group):
    """A group whose command list shows whole summaries; its subgroups are HelpGroups too."""

    group_class = type  # click: ``@group.group()`` makes a group of this same class

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

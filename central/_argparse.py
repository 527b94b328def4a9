"""The argument parsing both command lines share (`ranker-central`, `ranker-central-scale`)."""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["EXIT_ERROR", "DefaultsFormatter", "OneLineParser"]

EXIT_ERROR = 2  # a bad flag, a missing extra, a model that cannot load


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: {message} (see {self.prog} --help)\n")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; an absent value reads "unset", a flag "off"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.option_strings and (action.default is None or action.default is False):
            return f"{action.help} (default: {'unset' if action.default is None else 'off'})"
        return super()._get_help_string(action)

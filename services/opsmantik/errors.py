"""The one error hierarchy: every error a command can end with on purpose (docs/cli.md "Errors").

Domain modules return results (dataclasses) or raise one of these; they never print or exit.
The CLI (services/opsmantik/cli/errors.py) is the one place that maps a class to an exit code and
one line on stderr:

    OpsmantikError            base; never raised itself
    ├── UsageError            exit 2  a bad argument or OPSMANTIK_* setting
    │   ├── UnknownArgument           an id argument that names nothing (keys create SITE_ID)
    │   └── Refused                   a well-formed request refused as things stand; nothing changed
    ├── CheckFailed           exit 1  the check found a problem (what: each command's help)
    │   └── NotFound                  no active/open thing with that id (keys revoke, incident update)
    └── Unavailable           exit 3  could not run: an engine unreachable, the database not migrated,
                                      a lock held too long

A domain error that was a ValueError/RuntimeError/LookupError keeps that base too (it subclasses
both), so code that caught it by the old base still does.
"""

from __future__ import annotations


class OpsmantikError(Exception):
    """Base of the hierarchy. The message's first line is what the CLI shows."""


class UsageError(OpsmantikError):
    """A bad argument or setting: exit 2."""


class UnknownArgument(UsageError):
    """An argument names a thing that does not exist (e.g. a site id): exit 2."""


class Refused(UsageError):
    """Well-formed, but refused as things stand (a month not closable yet, already archived, a
    window announced too late); nothing was changed: exit 2."""


class CheckFailed(OpsmantikError):
    """The command ran and found a problem (drift, mismatch, an edited migration): exit 1."""


class NotFound(CheckFailed):
    """No active/open thing with that id (it may have existed: revoked, resolved): exit 1."""


class Unavailable(OpsmantikError):
    """Could not run: an engine is unreachable, the database is not migrated, a lock is held too
    long. The message names what to start or retry: exit 3."""

"""Replays: yesterday's turns (or the labelled set) through the normal pipeline, in a namespace of their own.

``namespace`` names and guards replay namespaces, ``overrides`` turns a TOML file into settings for
the replay's worker, ``source`` selects the turns, ``journal`` remembers what was published (resume),
``runner`` publishes them with back-pressure and waits for the replies. The command is
``streams/commands/replay_cmd.py``; evaluation of a run is ``streams/evaluation``.
"""

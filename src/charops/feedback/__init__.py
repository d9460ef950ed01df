"""The feedback flywheel: what people do with a served character, kept as events and turned
into preference data.

- :mod:`charops.feedback.events`: the event schema and its checks;
- :mod:`charops.feedback.store`: append-only events in the artifact store;
- :mod:`charops.feedback.export`: events -> TRL DPO pairs or KTO rows (``charops feedback export``);
- :mod:`charops.feedback.importers`: SillyTavern chats and Open WebUI feedback -> events.

See docs/feedback.md.
"""

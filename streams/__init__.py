"""The pipes: the Faust app, settings, topics, the embedded broker and the command line."""

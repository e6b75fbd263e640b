from connector_fakes import fake_producer, recorder_factory, serve  # noqa: F401  (fixtures)

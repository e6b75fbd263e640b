from connector_fakes import fake_producer, recorder_factory  # noqa: F401  (fixtures)

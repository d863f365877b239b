"""One module per DVC stage, each with ``run(cfg)``: load inputs, call the science, write outputs
atomically, log. ``pipelines/<stage>.py`` calls ``run_stage(<module>.run)``; the sweep calls the
same ``run`` in process. Science lives in the topic packages and never reads the config."""

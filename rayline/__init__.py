"""The `rayline` command: the one place that joins the library (pipeline) and the serving app
(serve). Thin: parse the arguments, call the workload, print the outcome; every error goes
through `pipeline.errors.describe`, the same mapping the jobs use."""

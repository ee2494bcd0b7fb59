"""The `kiln` command line: build, run, bench and inspect engines (`tensorkiln.cli.main:main`)."""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["batch"]:  # before pipeline.cli, which imports MLflow (seconds)
        from batch_prediction.cli import main as batch

        sys.exit(batch(sys.argv[2:], prog="python -m pipeline batch"))
    from pipeline.cli import main

    sys.exit(main())

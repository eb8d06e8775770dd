"""A gRPC model server that speaks TensorFlow Serving's API, for the embedded stack.

    python -m stack.model_server --port P --model-name NAME --model-base-path DIR [--max-batch 32]
        [--batch-timeout-ms 2] [--stats-file PATH] [--workers 4]

Concurrent Predict calls for one model version and signature are merged into one model call
(`stack.model_server.batching`).

The services live in `stack.model_server.server`; this package stays light so that the
command line can refuse a taken port before TensorFlow is imported.
"""

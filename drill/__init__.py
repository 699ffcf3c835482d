"""The drill harness: above the devnet, the signer and the watcher.

Writes drill directories (``witness-devnet init``), runs the demo, and holds
the process, port, audit and wait helpers the benchmarks and tests share, and
a local stand-in for Twilio's Messages API.
"""

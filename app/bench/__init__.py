"""The benchmarks, one module each, run by `apprentice bench ACTION` (app/commands/bench*.py) or by hand:

- serve: the serving core's throughput, hot swap under load and API overhead (`apprentice bench serve`);
- learn, learn_report, plots, facts: what one round learns and forgets, SDFT against SFT (`apprentice bench learn`);
- lifelong, lifelong_report: many small rounds through the real round code and gate (`apprentice bench lifelong`);
- capture: the database under 100k demonstrations and 32 writers (`python -m app.bench.capture`);
- forgetting: what a trained version forgot, per category (`python -m app.bench.forgetting`);
- run_gpu: the full learning benchmark as parallel worker processes on one GPU (`python -m app.bench.run_gpu`).

The fact file the learning benchmarks teach is data/facts.jsonl; results live in bench/results/ (docs).
"""

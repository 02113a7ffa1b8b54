"""The offline harness: dataset objectives on `config.mesh` through the shared loop (`offline.runner.fit`), and the
methods that train a policy against its frozen initial self, the reference (`offline.reference`: the reference
column, the proxy reward's normaliser, held-out sampling evals, export and summary)."""

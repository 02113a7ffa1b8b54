"""What the online and offline harnesses share: models by role (`roles`), the jitted rollout phases that
sample, score and teacher-force them (`experience`), the reward normaliser and held-out evaluation
(`evaluation`). Neither harness imports the other; both import this."""

"""Soak tests of a VoiceDeployment: `parley soak` as a Job, on a cron schedule or on demand
(the `parley.dev/soak-now` annotation), its result in `status.soak` and `SoakPassing`.

`jobs` renders the Job, `schedule` says when a cron slot is due, `results` reads a run's
summary into a status record and the condition, `runs` decides which run starts, waits or ends
(all pure); `handlers` is the kopf adapter.
"""

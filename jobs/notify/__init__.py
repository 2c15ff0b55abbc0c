"""Notifications: tell people when something changed or broke.

- :mod:`jobs.notify.base`: the package's errors (one base, :class:`~jobs.notify.base.NotifyError`) and a
  channel's configuration;
- :mod:`jobs.notify.rules`: the rules file (``notifications.yml``): channels, rules, secrets from the environment;
- :mod:`jobs.notify.events`: what is notified (:class:`~jobs.notify.events.Event`, derived from DeviceVault's
  streams and the index);
- :mod:`jobs.notify.channels`: where it goes (webhook, email, Slack, Teams: a small Protocol and a registry);
- :mod:`jobs.notify.queue`: the durable delivery queue in Redis (one delivery per event, rule and channel;
  retries with backoff; dead after ``max_tries``);
- :mod:`jobs.notify.notifier`: the ``devicevault notifier`` process (a stream subscriber with its own consumer
  group, and the delivery pump).
"""

"""Management commands of django-synerise."""

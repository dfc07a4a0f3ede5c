"""The one Store, assembled from one part per concern (how the parts fit: see database.py)."""

from vh_orch.orchestrator.store.core import CoreStore
from vh_orch.orchestrator.store.costs import CostsStore
from vh_orch.orchestrator.store.counts import CountsStore
from vh_orch.orchestrator.store.datasets import DatasetsStore
from vh_orch.orchestrator.store.fleet import FleetStore
from vh_orch.orchestrator.store.keys import KeysStore
from vh_orch.orchestrator.store.leases import LeasesStore
from vh_orch.orchestrator.store.lifecycle import LifecycleStore
from vh_orch.orchestrator.store.logs import LogsStore
from vh_orch.orchestrator.store.pipelines import PipelinesStore
from vh_orch.orchestrator.store.queries import QueriesStore
from vh_orch.orchestrator.store.registries import RegistriesStore
from vh_orch.orchestrator.store.repos import ReposStore
from vh_orch.orchestrator.store.secrets import SecretsStore
from vh_orch.orchestrator.store.tasks import TasksStore
from vh_orch.orchestrator.store.users import UsersStore
from vh_orch.orchestrator.store.utilization import UtilizationStore
from vh_orch.orchestrator.store.webhooks import WebhooksStore


class Store(CoreStore, FleetStore, TasksStore, PipelinesStore, QueriesStore, CountsStore, LogsStore,
            UtilizationStore, LifecycleStore, WebhooksStore, CostsStore, UsersStore, LeasesStore, DatasetsStore, ReposStore,
            SecretsStore, RegistriesStore, KeysStore):
    """The one object the rest of vh-orch uses to read and write state. A part that another one
    builds on comes after it here."""

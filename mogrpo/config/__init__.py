"""One typed config tree for a run, loaded from YAML with dotted overrides.

    cfg = load_config("cluster_configs/cpu_smoke.yaml", ["learner.lr=1e-6"])
"""

from mogrpo.config.loader import ConfigError, load_config, load_yaml_section, to_yaml
from mogrpo.config.run import RunConfig

__all__ = ["ConfigError", "RunConfig", "load_config", "load_yaml_section", "to_yaml"]

"""The configuration: one pure model per conf/*.yaml file, and the loader. Imports nothing of Spark.

    from cdp.conf import Settings, load_settings, ConfigError
"""

from cdp.conf.base import ConfigError, load_model, required_variables
from cdp.conf.settings import Settings, default_conf_dir, load_settings

__all__ = ["ConfigError", "Settings", "default_conf_dir", "load_model", "load_settings", "required_variables"]

/*
 * master_main.c - the mpfarm binary's entry: read the settings (exit 2 on a
 * usage or config error, before anything starts) and run the command.
 */
#include "master.h"

#include <stdio.h>
#include <stdlib.h>

int
main(int argc, char **argv)
{
	struct config cfg;
	int rc;

	/* the keys are in every mpfarm process's environment */
	(void)proc_harden();
	argv = title_init(argc, argv);
	rc = config_load(&cfg, argc, argv);
	if (rc != 0) {
		config_free(&cfg);
		return rc == CONFIG_PRINTED ? EXIT_OK : rc == CONFIG_EIO ?
		    EXIT_FATAL : EXIT_USAGE;
	}
	switch (cfg.cmd) {
	case CMD_SCAN:   rc = master_scan_run(&cfg); break;
	case CMD_STATUS: rc = master_status_run(&cfg); break;
	case CMD_RETRY:  rc = master_retry_run(&cfg); break;
	case CMD_FIX:    rc = master_fix_run(&cfg); break;
	case CMD_CHECK:  rc = master_check_run(&cfg); break;
	case CMD_FAILED: rc = master_failed_run(&cfg); break;
	case CMD_SHOW:   rc = master_show_run(&cfg); break;
	case CMD_SERVE:  rc = master_serve_run(&cfg); break;
	case CMD_CONFIG: rc = master_config_run(&cfg); break;
	case CMD_SIGNAL: rc = master_signal_run(&cfg); break;
	case CMD_MIGRATE: rc = master_migrate_run(&cfg); break;
	case CMD_RUN:    rc = cfg.dry_run ? master_plan_run(&cfg) :
			     master_farm_run(&cfg, argc, argv); break;
	default:
		say_err("mpfarm %s is not in this build", config_cmd_name(cfg.cmd));
		rc = EXIT_FATAL;
		break;
	}
	config_free(&cfg);
	return rc;
}

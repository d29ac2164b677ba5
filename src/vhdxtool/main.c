/*
 * main.c - vhdxtool's entry point: the global options and the dispatch to
 * one subcommand, each in its own file.  vt_commands is the only list of
 * commands: the dispatch, `help COMMAND` and the --help summary all read
 * it, so a new command is one entry there (and its vt_cmd_* function).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "vhdxtool.h"

static const struct vt_command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
} vt_commands[] = {
    {"create", vt_cmd_create, "create a new, empty image"},
    {"convert", vt_cmd_convert, "convert between raw and VHDX images"},
    {"info", vt_cmd_info, "show the structures of an image"},
    {"check", vt_cmd_check, "check an image, and optionally repair it"},
    {"merge", vt_cmd_merge, "fold a differencing image into its parent"},
    {"compact", vt_cmd_compact, "shrink an image file in place"},
    {"map", vt_cmd_map, "show where the virtual disk's data is"},
    {"resize", vt_cmd_resize, "grow or shrink the virtual disk"},
};

#define VT_N_COMMANDS (sizeof(vt_commands) / sizeof(vt_commands[0]))

static void vt_print_help(void)
{
	printf("usage: " VT_PROG " COMMAND [options] ...\n"
	       "       " VT_PROG " COMMAND --help\n"
	       "\n"
	       "Create, convert, inspect, check, repair and merge VHDX "
	       "images.\n"
	       "\n"
	       "Commands:\n");
	for (size_t i = 0; i < VT_N_COMMANDS; i++)
		printf("  %-9s %s\n", vt_commands[i].name,
		       vt_commands[i].summary);
	printf("\n"
	       "Options:\n"
	       "  -h, --help     print this help and exit\n"
	       "  -V, --version  print the version and exit\n"
	       "\n" VT_EXIT_CODES_HELP "\n"
	       "See vhdxtool(1) for details.\n");
}

static const struct vt_command *vt_find_command(const char *name)
{
	for (size_t i = 0; i < VT_N_COMMANDS; i++)
		if (!strcmp(vt_commands[i].name, name))
			return &vt_commands[i];
	return NULL;
}

/* An unknown command (or other bad use of the command word): exit 1. */
static int vt_unknown(const char *word, const char *what)
{
	if (what)
		fprintf(stderr, VT_PROG " %s: %s\n", word, what);
	else
		fprintf(stderr, VT_PROG ": unknown command '%s'\n", word);
	fprintf(stderr, "Try '" VT_PROG " --help' for the list of "
			"commands.\n");
	return VT_EXIT_USAGE;
}

int main(int argc, char **argv)
{
	const struct vt_command *cmd;

	if (argc < 2) {
		fprintf(stderr, VT_PROG ": no command given\n"
					"Try '" VT_PROG " --help' for more "
					"information.\n");
		return VT_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
	    !strcmp(argv[1], "help")) {
		if (argc > 3)
			return vt_unknown(argv[1], "too many arguments");
		if (argc == 3 && strcmp(argv[2], "help") &&
		    strcmp(argv[2], "--help") && strcmp(argv[2], "-h")) {
			char *args[] = {argv[2], "--help", NULL};

			/* the same table as the commands themselves */
			cmd = vt_find_command(argv[2]);
			if (!cmd)
				return vt_unknown(argv[2], NULL);
			return cmd->run(2, args);
		}
		vt_print_help();
		return VT_EXIT_OK;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf(VT_PROG " %s (library %s)\n", PACKAGE_VERSION,
		       vhdx_version());
		return VT_EXIT_OK;
	}
	cmd = vt_find_command(argv[1]);
	if (!cmd)
		return vt_unknown(argv[1], NULL);
	vt_catch_signals();
	return cmd->run(argc - 1, argv + 1);
}

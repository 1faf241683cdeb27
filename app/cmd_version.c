/* cmd_version.c: `sala version`: print the version and the backends this binary can use. */
#include "app.h"

#include <stdio.h>

SALA_COMMAND(version, "print the version");

const char cmd_version_usage[] =
    "usage: sala version\n\nPrints the sala version (same as 'sala --version').\n";

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("sala %s\n", SALA_VERSION);
    return EXIT_OK;
}

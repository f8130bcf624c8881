/* The smallest packed program: one line, exit 0 (tests/bench/pack). */
#include <stdio.h>
int main(void) {
    puts("hello from hello-min.c");
    return 0;
}

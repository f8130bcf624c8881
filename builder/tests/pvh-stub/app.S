/* A minimal static-pie "app" for the stub images (never run). */
        .text
        .globl _start
_start: hlt

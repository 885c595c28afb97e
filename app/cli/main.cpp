#include "core/version.h"
#include <cstdio>
int main() { std::printf("lcw-cli %s\n", lcw::version()); return 0; }

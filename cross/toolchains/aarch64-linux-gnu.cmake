# Cross-compiling the agent for 64-bit Arm with Debian's cross compiler and
# multiarch libraries (packaging/install-deps.sh arm64 installs both).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
# -L /: the multiarch loader and libc from /lib/<triplet> (Debian's arm64
# packages); the cross toolchain's own glibc under /usr/<triplet> is a
# different build and must not be mixed with them.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)

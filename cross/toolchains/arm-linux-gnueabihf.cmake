# Cross-compiling the agent for 32-bit Arm (armhf) with Debian's cross compiler
# and multiarch libraries (packaging/install-deps.sh armhf installs both).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)
# -L /: the multiarch loader and libc from /lib/<triplet> (Debian's arm64
# packages); the cross toolchain's own glibc under /usr/<triplet> is a
# different build and must not be mixed with them.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm -L /)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)

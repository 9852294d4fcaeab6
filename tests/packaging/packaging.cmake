# The packaging tests (label `packaging`): systemd units, the .deb lifecycle on
# this machine, the cluster manifests. Included from tests/packaging/CMakeLists.txt
# and, until tests/CMakeLists.txt adds that folder, from
# tests/integration/arm64/CMakeLists.txt (which ctest already picks up); the
# guard makes a second inclusion a no-op.
include_guard(GLOBAL)

set(_pkg_dir ${PROJECT_SOURCE_DIR}/tests/packaging)

# debhelper, dpkg-dev, lintian, python3-yaml: the `tools` set of install-deps.sh
# (quiet and idempotent; make check installs only `native` and `arm64`).
add_test(NAME packaging.install_tools
         COMMAND ${PROJECT_SOURCE_DIR}/packaging/install-deps.sh tools)
set_tests_properties(packaging.install_tools PROPERTIES
  LABELS packaging FIXTURES_SETUP packaging_tools RESOURCE_LOCK apt TIMEOUT 900)

# systemd-analyze verify on every unit, plus the settings the units promise.
outpost_add_test(packaging_units_test SOURCES ${_pkg_dir}/units_test.cpp
                 LIBS outpost_test_support LABELS packaging TIMEOUT 120)

# Installs, upgrades, removes and purges the amd64 agent package (root only).
outpost_add_test(packaging_deb_test SOURCES ${_pkg_dir}/deb_lifecycle_test.cpp
                 LIBS outpost_test_support nlohmann_json::nlohmann_json
                 LABELS packaging TIMEOUT 900)
# gtest_discover_tests registers the tests at ctest time from a generated
# script; this one runs after it (directory property) and sets, on the deb
# test, the tools fixture and a lock on dpkg.
file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/packaging_test_properties.cmake
     CONTENT [[
foreach(t IN LISTS packaging_deb_test_TESTS)
  set_tests_properties("${t}" PROPERTIES FIXTURES_REQUIRED packaging_tools RESOURCE_LOCK dpkg)
endforeach()
]] @ONLY)
set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES
             ${CMAKE_CURRENT_BINARY_DIR}/packaging_test_properties.cmake)

# The container build file and the Kubernetes manifests, parsed and checked.
find_program(OUTPOST_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT OUTPOST_PYTHON3)
  set(OUTPOST_PYTHON3 python3)
endif()
add_test(NAME packaging.cluster_manifests
         COMMAND ${OUTPOST_PYTHON3} ${_pkg_dir}/check_cluster.py ${PROJECT_SOURCE_DIR}/packaging
                 ${CMAKE_BINARY_DIR}/bin)
set_tests_properties(packaging.cluster_manifests PROPERTIES
  LABELS packaging FIXTURES_REQUIRED packaging_tools TIMEOUT 60)

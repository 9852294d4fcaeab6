# Included by ctest after gtest_discover_tests' own script for this directory:
# every test of packaging_deb_test needs the packaging tools installed first,
# and only one test at a time may use dpkg on this machine.
foreach(t IN LISTS packaging_deb_test_TESTS)
  set_tests_properties("${t}" PROPERTIES FIXTURES_REQUIRED packaging_tools RESOURCE_LOCK dpkg)
endforeach()

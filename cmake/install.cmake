# What `cmake --install build [--prefix P]` installs, and the .deb CPack makes of it.
#
#   P/include/bnorm/*.h, *.hpp                the C and C++ API
#   P/LIBDIR/libbnorm.so.0.1.0 (SONAME libbnorm.so.0), libbnorm.so, libbnorm.a
#   P/LIBDIR/cmake/bnorm/                     find_package(bnorm CONFIG): bnorm::bnorm,
#                                             bnorm::bnorm_static, with a version file
#   P/LIBDIR/pkgconfig/bnorm.pc               pkg-config --cflags --libs bnorm
#   P/bin/bnorm                               the command line
#   P/PYTHONDIR/bnorm/                        the Python package (python/CMakeLists.txt)
#
# LIBDIR is GNUInstallDirs' (lib, or lib/<multiarch> under /usr). Nothing installed
# points into the build tree: install(TARGETS) drops the build RPATH, the peers plugin
# is looked for beside the executable (bench/peers/plugin_client.cpp), and
# tests/install/run checks the installed files for the build and source paths.
include(CMakePackageConfigHelpers)

set(BNORM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/bnorm)

install(DIRECTORY include/bnorm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
install(TARGETS bnorm_shared bnorm EXPORT bnormTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} NAMELINK_COMPONENT Unspecified
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS bnorm_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(EXPORT bnormTargets NAMESPACE bnorm:: DESTINATION ${BNORM_CMAKE_DIR})

configure_package_config_file(cmake/bnormConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/bnormConfig.cmake INSTALL_DESTINATION ${BNORM_CMAKE_DIR})
# 0.x: a new minor version may change the API, so only 0.1.* satisfies a request for 0.1.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/bnormConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/bnormConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/bnormConfigVersion.cmake DESTINATION ${BNORM_CMAKE_DIR})

# pkg-config: the prefix relative to the .pc file's directory, so the tree can move.
file(RELATIVE_PATH BNORM_PC_RELATIVE_PREFIX
  /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" BNORM_PC_RELATIVE_PREFIX "${BNORM_PC_RELATIVE_PREFIX}")
configure_file(cmake/bnorm.pc.in ${CMAKE_CURRENT_BINARY_DIR}/bnorm.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/bnorm.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

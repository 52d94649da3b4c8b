# Remove the INTERFACE_INCLUDE_DIRECTORIES entries of one target that match a regex.
function(_sam3d_drop_interface_includes target regex)
  get_target_property(_includes ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_includes)
    list(FILTER _includes EXCLUDE REGEX "${regex}")
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_includes}")
  endif()
endfunction()

# The ROS 2 PyPI wheels export CMake targets whose INTERFACE_INCLUDE_DIRECTORIES name the wheel
# build machine's /opt/python/... tree, which does not exist here, and CMake's generate step
# fails on it. Remove those entries from every imported target. On a normal ROS install no
# target names /opt/python/, so this does nothing.
function(_sam3d_drop_opt_python_includes dir)
  get_property(_targets DIRECTORY "${dir}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    _sam3d_drop_interface_includes(${_target} "^/opt/python/")
  endforeach()
  get_property(_subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(_subdir IN LISTS _subdirs)
    _sam3d_drop_opt_python_includes("${_subdir}")
  endforeach()
endfunction()
_sam3d_drop_opt_python_includes("${CMAKE_CURRENT_SOURCE_DIR}")

# A venv inside the source tree (tools/bootstrap.sh makes .venv/<distro> there) puts numpy's
# include directory on the generated Python typesupport's INTERFACE_INCLUDE_DIRECTORIES; CMake
# refuses to export a path inside the source tree unless the install prefix holds it too (as it
# does for the bootstrap, not for `colcon build` into ./install). Only the typesupport library
# itself compiles against numpy, so the interface entry can go.
if(TARGET ${PROJECT_NAME}__rosidl_generator_py)
  _sam3d_drop_interface_includes(${PROJECT_NAME}__rosidl_generator_py "^${CMAKE_SOURCE_DIR}/")
endif()

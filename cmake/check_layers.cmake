# Fails when a file includes a header from a layer above its own.
# Usage: cmake -DROOT=<source dir> -P cmake/check_layers.cmake
#
# The layers, bottom to top, and what each may include (besides itself and third-party headers):
#   common   <- formats <- tensor <- adapters <- model <- engine <- server
#   text (tokenizer, chat templates) sits on common only and is used from engine up.
#   client (the gRPC client, CLI, load generator) sits on common and the generated API only.
#   train (loramux train / merge) sits on engine and everything below it, never on server.
set(allowed_common "common")
set(allowed_formats "common;formats")
set(allowed_tensor "common;formats;tensor")
set(allowed_text "common;text")
set(allowed_adapters "common;formats;tensor;adapters")
set(allowed_model "common;formats;tensor;adapters;model")
set(allowed_engine "common;formats;tensor;text;adapters;model;engine")
set(allowed_server "common;formats;tensor;text;adapters;model;engine;server")
set(allowed_client "common;client")
set(allowed_train "common;formats;tensor;text;adapters;model;engine;train")
set(layers common formats tensor text adapters model engine server client train)

cmake_policy(SET CMP0057 NEW)  # if(... IN_LIST ...)
if(NOT ROOT)
  message(FATAL_ERROR "check_layers.cmake: pass -DROOT=<source dir>")
endif()
set(violations "")
foreach(layer IN LISTS layers)
  file(GLOB_RECURSE files "${ROOT}/${layer}/*.h" "${ROOT}/${layer}/*.cc" "${ROOT}/${layer}/*.cu")
  foreach(file IN LISTS files)
    file(STRINGS "${file}" includes REGEX "^[ \t]*#[ \t]*include[ \t]*[\"<][a-z_]+/")
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[\"<]([a-z_]+)/.*" "\\1" target "${line}")
      if(target IN_LIST layers AND NOT target IN_LIST allowed_${layer})
        file(RELATIVE_PATH rel "${ROOT}" "${file}")
        string(STRIP "${line}" line)
        string(REPLACE ";" ", " allowed "${allowed_${layer}}")
        list(APPEND violations "  ${rel}: ${line}  (${layer}/ may include only: ${allowed})")
      endif()
    endforeach()
  endforeach()
endforeach()
if(violations)
  list(JOIN violations "\n" report)
  message(FATAL_ERROR "A layer includes a header from a layer above it (see README, \"Layers\"):\n${report}")
endif()

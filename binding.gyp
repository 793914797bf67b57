{
  "targets": [
    {
      "target_name": "sstable_tde",
      "sources": [
        "native/addon.cc",
        "native/aes_ni.cc",
        "native/checksum.cc",
        "native/chunk_cipher.cc",
        "native/cipher_suite.cc",
        "native/codec.cc",
        "native/gcm_ni.cc",
        "native/pipeline.cc",
        "native/read_check.cc",
        "native/stream_bench.cc",
        "native/thread_pool.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "dependencies": ["<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except"],
      "cflags_cc": ["-std=c++17", "-O3", "-Wall", "-Wextra", "-fvisibility=hidden"],
      # A worker thread being terminated refuses every Node-API call, the throwing of an error
      # included: without the second define, node-addon-api then throws a C++ exception nothing
      # can catch, and the whole process aborts.
      "defines": ["NAPI_VERSION=8", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "libraries": ["-ldl"],
      # Never unmapped by dlclose: the pool's threads outlive the worker thread that loaded the
      # addon, and a batch may still be running its code when that worker exits.
      "ldflags": ["-Wl,-z,nodelete"]
    }
  ]
}

// Argument parsing for the apps and benchmarks, through CLI11: --help prints every flag and
// exits 0; a bad argument is one line on stderr and exit code 2. Not error handling for the
// work itself: each app catches lopper::Error and exits 1.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "core/error.h"

namespace lopper::apps {

// A validator for integer flags: "--steps: expected 1 or more, got 0".
inline CLI::Validator at_least(long long lo) {
  return CLI::Validator(
      [lo](std::string& s) -> std::string {
        size_t used = 0;
        long long v = 0;
        try {
          v = std::stoll(s, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (s.empty() || used != s.size()) return "expected an integer, got '" + s + "'";
        return v >= lo ? std::string() : "expected " + std::to_string(lo) + " or more, got " + s;
      },
      ">=" + std::to_string(lo));
}

// Returns -1 when the arguments parsed and the app should go on, else the exit code.
inline int parse_args(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return -1;
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%s: error: %s (try --help)\n", app.get_name().c_str(), e.what());
    return 2;
  }
}

// --verbose: errors also name the source line that threw them.
inline void add_verbose(CLI::App& app, bool& verbose) {
  app.add_flag("--verbose", verbose, "on error, also print the source line that threw it");
}

// Prints an error the work threw as one line, "APP: error: MESSAGE", with the source line
// that threw it only when verbose (or in a debug build); returns the exit code, 1.
// who: "" or what tells this process from others of its job ("rank 1 of 2").
inline int report_error(const CLI::App& app, const std::exception& e, bool verbose, const std::string& who = "") {
#ifndef NDEBUG
  verbose = true;
#endif
  const auto* le = dynamic_cast<const lopper::Error*>(&e);
  std::string where = verbose && le && !le->where().empty() ? " (" + le->where() + ")" : "";
  std::string name = app.get_name() + (who.empty() ? "" : " (" + who + ")");
  std::fprintf(stderr, "%s: error: %s%s\n", name.c_str(), e.what(), where.c_str());
  return 1;
}

}  // namespace lopper::apps

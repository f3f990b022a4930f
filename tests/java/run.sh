#!/usr/bin/env bash
# Builds the Java client test with Maven and runs it against a fresh sluice with 1 and 2 shards.
# Usage: tests/java/run.sh path/to/sluice
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sluice=$(realpath "$1")
source "$here/../broker.sh"
mvn -q -f "$here/pom.xml" -DskipTests package dependency:copy-dependencies -DoutputDirectory="$here/target/dependency"
cp="$here/target/classes:$here/target/dependency/*"
for cores in 1 2; do
    start_broker "$sluice" "$cores"
    java -cp "$cp" sluice.JavaClientTest "127.0.0.1:$port" || broker_failed "java client test failed ($cores shards)"
    stop_broker
done

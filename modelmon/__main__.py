from modelmon.cli import main

raise SystemExit(main())

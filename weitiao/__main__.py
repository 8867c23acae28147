from weitiao.cli import main

raise SystemExit(main())

from infra.cost.cli import main

raise SystemExit(main())

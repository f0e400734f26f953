terraform {
  # Preconditions (1.2+) and check blocks (1.5+); no provider block here: the
  # root module that wgmesh renders passes one aliased `aws` provider per region.
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

terraform {
  # terraform_data (1.4+), check blocks (1.5+) and local-exec provisioners
  # only: no provider, `terraform init` downloads nothing.
  required_version = ">= 1.5.0"
}

"""Tests of the production resources (BuildKit pool, ECR, canary) against fakes and moto."""
